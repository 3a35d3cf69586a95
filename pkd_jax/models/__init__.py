"""Flax modules of pkd_jax: trunks, recurrent layers, fusion and the Teacher / Student networks."""

from pkd_jax.models.fusion import ConcatFusionHead, JCASettings, JointCrossAttention, MLPHead
from pkd_jax.models.joint import TeacherStudent
from pkd_jax.models.physio import PhysioEncoder
from pkd_jax.models.pkd import MODALITIES, Student, Teacher
from pkd_jax.models.r3d import R3D18
from pkd_jax.models.resnet import ResNet18
from pkd_jax.models.temporal import GRU, LSTM
from pkd_jax.models.vgg import VGG19BN

# Any network a training stage trains: a student, a teacher, or the one-stage pair.
Network = Student | Teacher | TeacherStudent

__all__ = [
    "GRU",
    "LSTM",
    "MODALITIES",
    "R3D18",
    "VGG19BN",
    "ConcatFusionHead",
    "JCASettings",
    "JointCrossAttention",
    "MLPHead",
    "Network",
    "PhysioEncoder",
    "ResNet18",
    "Student",
    "Teacher",
    "TeacherStudent",
]
