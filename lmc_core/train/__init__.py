"""Training: the loop with controlled SGD noise, stacked copies trained in lockstep, the copy dispatcher and evaluation."""
