"""Helpers of tools/train_peoplenet_demo.py (issue 3 item 5): labels, model, evaluation."""
