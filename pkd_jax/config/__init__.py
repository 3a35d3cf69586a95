"""From a config to what it describes: checking its values (`check`) and building the networks, losses,
caches and input pipeline it names (`build`). The fields and their defaults are `pkd_jax.defaults`."""
