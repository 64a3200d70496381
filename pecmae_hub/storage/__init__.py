"""Where model files live on disk and how they are written and checked: the pretrained folder format
(``pretrained``), SHA-256 checksums (``integrity``), atomic writes (``atomic``) and Hub reachability
(``connectivity``). Leaf layer: imports only ``errors`` and ``configuration`` of the package."""
