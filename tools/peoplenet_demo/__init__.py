"""Helpers of tools/train_peoplenet_demo.py : labels, model, evaluation."""
