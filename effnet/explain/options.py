"""What ``effnet explain`` can be asked for, without importing torch (the command line lists these)."""

# torchcam's extractors by the names the command line takes; CAM itself (Zhou et al. 2016, what the paper's
# Figure 7 shows) is Grad-CAM's special case for a network that ends in global pooling + one linear layer
METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMpp",
    "smoothgradcam++": "SmoothGradCAMpp",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
}
DEFAULT_LAYER = "head"  # the last convolution (1x1 to 1280+ channels) before global pooling, as CAM uses
