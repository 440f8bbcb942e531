"""Every number taken from the CrissCross paper (or, where it is vague, from its public code), each
with the table or section it comes from. Nothing else in the package hard-codes these values:
the torch and DALI augmentation backends read the same :data:`VIDEO_AUG` / :data:`AUDIO_AUG`,
the trainer's presets read :data:`PRETRAIN`, evaluation reads :data:`FINETUNE` and :data:`EVAL`.

"official code" below means the facts in shared/reference/official-code.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

# --- Inputs (Sec. 4 "Experiment setup", official code) ------------------------------------------
FPS = 16                       # frames per second of the visual stream
SAMPLE_RATE = 16000            # audio sample rate
VIDEO_FRAMES = 8               # frames per view: 0.5 s at 16 fps
AUDIO_SECONDS = 2.0            # audio per view
CROP_SIZE = 112                # pretraining crop (Table S5 input 8 x 112^2)
EVAL_RESIZE = 128              # evaluation: resize short side to 112 / 0.875, then center crop 112
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VideoAugSettings:
    """Visual augmentation parameters (Table S1; ranges the paper leaves vague from official code).
    :meth:`only` turns off the augmentations outside a Table 5 subset."""

    crop_size: int = CROP_SIZE
    multi_scale_crop: bool = True                       # MSC; off: EVAL_RESIZE short side + centre crop
    eval_resize: int = EVAL_RESIZE                      # short side of the centre-crop (eval-style) view
    crop_scale: tuple[float, float] = (0.08, 1.0)      # Multi-Scale Crop "min area = 0.08"
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)   # official code (torchvision default)
    flip_p: float = 0.5                                 # Horizontal Flip p = 0.5
    brightness: float = 0.4                             # Color Jitter (Table S1)
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.2
    jitter_p: float = 1.0                               # official code: applied always, random order
    grayscale_p: float = 0.2                            # Gray Scale p = 0.2
    blur_p: float = 0.5                                 # Gaussian Blur p = 0.5
    blur_kernel: int = 11                               # official code
    blur_sigma: tuple[float, float] = (0.1, 2.0)        # SimCLR's range, drawn per view (not fixed)
    cutout_p: float = 1.0                               # Cutout num = 1
    cutout_max_size: int = 20                           # Cutout max size = 20 px
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Sec. 4.5 "Temporal Consistency": one draw per view (temporally consistent, 68.09% on UCF101)
    # or one per frame (temporally random, 53.69%).
    per_frame: bool = False

    def only(self, codes: "Sequence[str]", per_frame: bool | None = None) -> "VideoAugSettings":
        """These settings with the augmentations whose Table 5 code (:data:`VIDEO_AUG_CODES`) is
        not in ``codes`` turned off (and ``per_frame`` set when given)."""
        off = {k: v for code, values in VIDEO_AUG_OFF.items() if code not in codes for k, v in values.items()}
        return replace(self, **off, **({} if per_frame is None else {"per_frame": per_frame}))


@dataclass(frozen=True)
class AudioAugSettings:
    """Log-mel and audio augmentation parameters (Sec. 4, Table S2, official code)."""

    n_fft: int = 1024                                   # "FFT window length as 1024"
    hop_length: int = 160                               # "hop size as 10 milliseconds"
    n_mels: int = 80                                    # "80 mel filters"
    f_min: float = 0.0
    f_max: float = 8000.0
    log_eps: float = 1e-6                               # natural log(mel + eps), official code
    norm_mean: float = -5.3688107                       # global normalisation, official code
    norm_std: float = 4.410007
    volume: tuple[float, float] = (0.8, 1.2)            # Volume Jitter range = +-0.2
    freq_masks: int = 2                                 # Frequency Mask num = 2
    freq_mask_max: int = 10                             # Frequency Mask max size = 10 (randint[0,10))
    time_masks: int = 2                                 # Time Mask num = 2
    time_mask_max: int = 20                             # Time Mask max size = 20 (randint[0,20))
    crop_p: float = 1.0                                 # Random Crop (BYOL-A, Table S2)
    crop_scale: tuple[float, float] = (0.6, 1.5)        # Random Crop range = [0.6, 1.5]
    crop_canvas: tuple[float, float] = (1.0, 1.5)       # Random Crop crop scale = [1.0, 1.5]
    time_warp: bool = False                             # off in pretraining (Table S4)
    time_warp_window: int = 20                          # Timewarp wrap window = 20

    def only(self, codes: "Sequence[str]") -> "AudioAugSettings":
        """These settings with exactly the augmentations of a Table 5 subset (:data:`AUDIO_AUG_CODES`):
        the others off, and the time warp on when ``TW`` is in ``codes``."""
        off = {k: v for code, values in AUDIO_AUG_OFF.items() if code not in codes for k, v in values.items()}
        return replace(self, **off, **({"time_warp": True} if "TW" in codes else {}))


# --- Augmentation subsets (Table 5; the pretraining and evaluation rows of Tables S3 / S4) -------
VIDEO_AUG_CODES = ("MSC", "HF", "CJ", "GS", "GB", "C")  # multi-scale crop, horizontal flip, colour
#                                                         jitter, gray scale, gaussian blur, cutout
AUDIO_AUG_CODES = ("VJ", "M", "RC", "TW")               # volume jitter, time + frequency masks,
#                                                         random (resized) crop, time warp
PRETRAIN_VIDEO_AUGS = ("MSC", "HF", "CJ", "GS", "GB", "C")   # Table 5's best (74.8 / 79.0); Table S3
PRETRAIN_AUDIO_AUGS = ("VJ", "M", "RC")                      # Table 5's best; Table S4: no TW
EVAL_TRAIN_VIDEO_AUGS = ("MSC", "HF", "CJ", "GS", "C")       # Table S3 / E.1: no blur in evaluation
EVAL_TRAIN_AUDIO_AUGS = ("VJ", "M", "RC", "TW")              # Table S4: TW helps linear evaluation
# What "off" means for each code (the settings' own values are "on"; without MSC a view is the
# evaluation transform's resize + centre crop, the crop the paper's non-MSC rows imply).
VIDEO_AUG_OFF = {"MSC": {"multi_scale_crop": False}, "HF": {"flip_p": 0.0}, "CJ": {"jitter_p": 0.0},
                 "GS": {"grayscale_p": 0.0}, "GB": {"blur_p": 0.0}, "C": {"cutout_p": 0.0}}
AUDIO_AUG_OFF = {"VJ": {"volume": (1.0, 1.0)}, "M": {"freq_masks": 0, "time_masks": 0},
                 "RC": {"crop_p": 0.0}, "TW": {"time_warp": False}}

VIDEO_AUG = VideoAugSettings().only(PRETRAIN_VIDEO_AUGS)
AUDIO_AUG = AudioAugSettings().only(PRETRAIN_AUDIO_AUGS)
# Linear evaluation / fine-tuning (Table S3): no Gaussian blur; audio adds time warp (Table S4).
VIDEO_AUG_EVAL_TRAIN = VideoAugSettings().only(EVAL_TRAIN_VIDEO_AUGS)
AUDIO_AUG_EVAL_TRAIN = AudioAugSettings().only(EVAL_TRAIN_AUDIO_AUGS)


# --- Model (Tables S5-S8, official code) ---------------------------------------------------------
@dataclass(frozen=True)
class ModelSettings:
    feature_dim: int = 512          # backbone output (Tables S5, S6)
    proj_hidden: int = 2048         # Table S7
    proj_dim: int = 2048
    proj_layers: int = 3            # Table 3: 3 layers beat 2
    pred_hidden: int = 512          # Table S8
    num_params: dict = field(default_factory=lambda: {  # measured from the published definitions
        "video_backbone": 15_379_136, "audio_backbone": 11_170_240,
        "projector": 9_455_616, "projector_2layer": 5_255_168, "predictor": 2_100_736,
        "total": 49_662_080,
        # Table 3's variants: one predictor for both modalities; 2-layer projectors; both.
        "total_shared_predictor": 47_561_344, "total_2layer_projector": 41_261_184,
        "total_2layer_projector_shared_predictor": 39_160_448})


MODEL = ModelSettings()


# --- Pretraining (Table S10) ---------------------------------------------------------------------
@dataclass(frozen=True)
class PretrainSettings:
    """One row of Table S10."""

    batch_size: int
    epoch_size: int                 # samples per epoch ("es")
    epochs: int
    larc: bool                      # "Adam*" = Adam wrapped in LARC
    lr_start: float                 # backbone + projector base LR, after warm-up
    lr_end: float                   # cosine end
    lr_predictor: float             # constant (10x base, Sec. 4.4 "Predictor")
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 2.0      # official code: linear warm-up from 0 over 2 epochs
    larc_trust: float = 1e-3        # official code: LARC trust coefficient, clip mode


PRETRAIN = {
    "kinetics-sound": PretrainSettings(512, 220_000, 100, False, 2e-4, 0.0, 2e-3),
    "kinetics400": PretrainSettings(2048, 1_000_000, 100, True, 2e-4, 1e-4, 2e-3),
    "audioset": PretrainSettings(2048, 3_500_000, 100, True, 1e-4, 0.0, 1e-3),
}
# Sec. 4.4 "Predictor": a constant predictor LR of 10x the base LR works best (Table 3's "lr_p = lr_b"
# row sets it equal to the base LR instead).
PREDICTOR_LR_FACTOR = 10
# Ablations (Appendix G.1): the uni-modal rows of Table 1 use their own learning rates.
ABLATION_LR = {"v1v2": (1e-4, 1e-3), "a1a2": (1e-5, 1e-4)}   # (base, predictor)


# --- Full fine-tuning (Table S11, Appendix G.2) --------------------------------------------------
EVAL_CROP_SIZE = 224           # E.1 / E.2: "a spatial resolution of 224^2" (linear SVM and fine-tuning)


def eval_short_side(crop_size: int) -> int:
    """The short side evaluation resizes frames to before a centre crop of ``crop_size`` (the
    paper's 112 -> 128, i.e. crop / 0.875): 128 for 112^2, 256 for 224^2. Shards built with a
    smaller ``--short-side`` are upscaled."""
    return round(crop_size * EVAL_RESIZE / CROP_SIZE)


@dataclass(frozen=True)
class FinetuneSettings:
    frames: int
    crop_size: int
    batch_size: int
    epochs: int
    milestones: tuple[int, ...]
    lr: float
    gamma: float
    weight_decay: float = 0.0
    momentum: float = 0.9
    dropout: float = 0.0
    test_clips: int = 10            # E.2: 10 equally spaced clips, softmax averaged
    epoch_size: int | None = None   # training clips per epoch ("es"); None: one clip per training video


# Table S11 (es = epoch size: 95K clips for UCF101, 35K for HMDB51, about 10 clips per training
# video of split 1's 9,537 / 3,570 videos; the official code also takes 10 clips per video).
FINETUNE = {
    ("ucf101", 8): FinetuneSettings(8, EVAL_CROP_SIZE, 64, 20, (6, 10, 14), 5e-4, 0.3, epoch_size=95_000),
    ("ucf101", 32): FinetuneSettings(32, EVAL_CROP_SIZE, 32, 20, (8, 12, 16), 7e-5, 0.3, epoch_size=95_000),
    ("hmdb51", 8): FinetuneSettings(8, EVAL_CROP_SIZE, 64, 20, (6, 10, 14), 5e-4, 0.1, epoch_size=35_000),
    ("hmdb51", 32): FinetuneSettings(32, EVAL_CROP_SIZE, 32, 20, (8, 12, 16), 1e-4, 0.3, epoch_size=35_000),
}


# --- Linear evaluation, retrieval, fusion (Appendix E) -------------------------------------------
SVM_C = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 1.0)        # E.1 cost sweep


@dataclass(frozen=True)
class ProtocolSettings:
    train_clips: int                # augmented clips per training video
    test_clips: int                 # uniformly spaced clips per test video
    pool: tuple[int, ...]           # max-pool kernel on conv5
    pool_stride: tuple[int, ...] | None = None
    frames: int = VIDEO_FRAMES
    audio_seconds: float = AUDIO_SECONDS
    crop_size: int = CROP_SIZE      # video crop


EVAL = {
    # E.1 HMDB51 / UCF101: 8-frame inputs at 224^2, 25 augmented training clips, 10 uniform test
    # clips, conv5 (1x7x7) -> max pool (1,4,4) -> 8192-d.
    "video_linear": ProtocolSettings(25, 10, (1, 4, 4), crop_size=EVAL_CROP_SIZE),
    # E.1 ESC-50: 10 epochs of augmented training clips, 10 test segments (2 s), (1,3)/(1,2).
    "audio_linear": ProtocolSettings(10, 10, (1, 3), (1, 2)),
    # E.1 DCASE: 60 clips per sample, 1 s inputs, same pooling as ESC-50.
    "dcase_linear": ProtocolSettings(60, 60, (1, 3), (1, 2), audio_seconds=1.0),
    # E.1 fusion on Kinetics-Sound: 10 clips, 2 s; video (1,2,2), audio (1,4) -> 2048-d each.
    "fusion_video": ProtocolSettings(10, 10, (1, 2, 2), audio_seconds=2.0),
    "fusion_audio": ProtocolSettings(10, 10, (1, 4), audio_seconds=2.0),
    # E.3 retrieval: 10 uniform clips per video (train and test) of "2-second inputs" (32 frames at
    # 16 fps; the crop is not given: the pretraining 112^2), averaged features.
    "retrieval": ProtocolSettings(10, 10, (1, 4, 4), frames=2 * FPS),
}
RETRIEVAL_K = (1, 5, 20)            # E.3 / Table 7
# E.1 Kinetics-400 (and 32-frame UCF101 / HMDB51): a linear layer on the frozen backbone instead of
# the SVM, 1 training clip per video per epoch for Kinetics-400, 10 for 32-frame UCF / HMDB.
PROBE_CLIPS_PER_VIDEO = {"kinetics400": 1, "ucf101": 10, "hmdb51": 10}


# --- Linear evaluation against pretraining set size (Table 4, Fig. 5 right) ----------------------
PRETRAIN_SET_SIZE = {"kinetics-sound": 22_000, "kinetics400": 240_000, "audioset": 1_800_000}  # Table 4 header
LINEAR_TOP1 = {     # Table 4: top-1 linear evaluation, by (downstream, pretraining set)
    "HMDB51": {"kinetics-sound": 0.457, "kinetics400": 0.500, "audioset": 0.562},
    "UCF101": {"kinetics-sound": 0.781, "kinetics400": 0.839, "audioset": 0.877},
    "Kinetics400": {"kinetics-sound": 0.390, "kinetics400": 0.445, "audioset": 0.501},
    "ESC50": {"kinetics-sound": 0.828, "kinetics400": 0.868, "audioset": 0.905},
    "DCASE": {"kinetics-sound": 0.930, "kinetics400": 0.960, "audioset": 0.970},
}
SCALING_DATASETS = ("HMDB51", "UCF101", "Kinetics400", "ESC50")   # Fig. 5 right leaves DCASE out (Sec. 4.6)


# --- Kinetics-Sound (Appendix C.1; the 32 classes as the authors listed them) --------------------
# Defined in avshards (`avshards build --dataset kinetics-sound` needs it; avshards knows nothing of
# crisscross) and named here too, beside the paper's other numbers.
from avshards.datasets import KINETICS_SOUND_CLASSES  # noqa: E402,F401
