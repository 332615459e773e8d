"""Vision-language foundations: captioned scene data, contrastive pre-training, retrieval metrics,
grounding, and loading the pre-trained encoders into policies."""
