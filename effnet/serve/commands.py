"""``effnet serve`` (issue 12, in progress)."""


def add_commands(sub) -> None:
    pass
