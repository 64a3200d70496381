"""Diffusion sampling apart from the models: the exact v-diffusion sampler (``v_diffusion``) and the
diffusers schedulers configured for our parameterisation (``schedulers``). Leaf layer."""
