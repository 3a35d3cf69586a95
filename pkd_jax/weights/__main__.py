"""Converts a pretrained trunk into an initialisation file for `config.pretrained.*`.

    python -m pkd_jax.weights import --arch=vgg19_bn --src=PrivateTest_model.t7 --out=weights/vgg19_fer.npz
    python -m pkd_jax.weights import --arch=resnet18 --src=resnet18-f37072fd.pth --out=weights/resnet18.npz
    python -m pkd_jax.weights import --arch=mtcnn --src=facenet_pytorch-2.6.0-py3-none-any.whl --out=mtcnn.npz

`--src` is a PyTorch checkpoint (`.pth`/`.t7`/..., read with `weights_only=True`) or an `.npz`; every
tensor the trunk expects must be in it with the expected shape (VGG19-BN's fc may be absent, as in the
FER2013 checkpoint: it then keeps its random init), otherwise nothing is written.
"""

from absl import app, flags

from pkd_jax.weights import cli

if __name__ == "__main__":
    cli.define_flags()
    flags.adopt_module_key_flags(cli)  # so that --help lists them, as flags of this entry point
    app.run(cli.main)
