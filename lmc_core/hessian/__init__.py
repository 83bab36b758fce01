"""The Hessian of the loss: the product operator, top eigenvalues, trace, diagonal and spectral density."""
