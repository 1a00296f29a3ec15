"""STAR-Transformer model (Ahn et al., WACV 2023, section 3)."""
