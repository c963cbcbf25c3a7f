"""``effnet detect ...`` and ``effnet data detect-digits`` (issue 10, in progress)."""


def add_commands(sub) -> None:
    pass
