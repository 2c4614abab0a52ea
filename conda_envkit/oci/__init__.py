"""OCI images from content: deterministic layers, image layouts, docker archives, and a registry client.

Nothing here knows about conda; `bake.py` feeds it files and metadata.
"""
