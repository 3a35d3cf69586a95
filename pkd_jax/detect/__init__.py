"""Face detection in JAX: MTCNN (the paper's detector) and five-landmark face alignment.

Modules:
  `mtcnn_nets`: P-Net, R-Net and O-Net as flax modules (PReLU, ceil-mode pooling, the three heads).
  `boxes`: box arithmetic on padded candidate sets: IoU, greedy non-maximum suppression, regression.
  `resample`: area resampling (PyTorch's `interpolate(mode="area")`) of whole frames and of boxes.
  `mtcnn`: the three-stage cascade, jit-compiled with static shapes, for a batch of frames.
  `mtcnn_detector`: the `mtcnn` face detector of `pkd_jax.data.faces` (weights, tracking, batching).
  `landmark_align`: similarity alignment of five landmarks to the 112 x 112 template.
"""
