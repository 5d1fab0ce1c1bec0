"""The offline CPU engine behind ``local/preview``: frame generators over numpy RGB frames.

Every function here returns an iterator (frames are rendered lazily, one at a time) of
``uint8`` RGB arrays of shape (H, W, 3) (``camera_frames_yuv``: I420 buffers in the
encoder's own format); feed it to ``stillmotion.media.video.encode_frames``.
"""

from .animate import animate_frames, choose_camera
from .brush import BrushRegion, brush_frames
from .camera import CAMERA_TYPES, PRESETS, CameraSpec, camera_frames, camera_frames_yuv, camera_homography
from .frames import Resolution, fit_image, working_size
from .interpolate import interpolate_frames

__all__ = [
    "CAMERA_TYPES",
    "PRESETS",
    "BrushRegion",
    "CameraSpec",
    "Resolution",
    "animate_frames",
    "brush_frames",
    "camera_frames",
    "camera_frames_yuv",
    "camera_homography",
    "choose_camera",
    "fit_image",
    "interpolate_frames",
    "working_size",
]
