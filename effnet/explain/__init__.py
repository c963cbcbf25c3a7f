"""Where a classifier looks: class activation maps over a photo (torchcam's Grad-CAM family), and the paper's
Figure 7 (a baseline and its depth-, width-, resolution- and compound-scaled versions side by side).

``cam``: one model's map in the photo's pixel frame and its overlay; ``compare``: the Figure-7 sheet;
``options``: the methods and the default layer (torch-free, for the command line).
"""
