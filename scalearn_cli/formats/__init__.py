"""Readers for adapters written by other tools (PEFT LoRA, AdapterHub bottleneck) into the tensors we compose.

Pure functions over folders: no model is built here. See docs/sources.md for what is accepted and refused.
"""
