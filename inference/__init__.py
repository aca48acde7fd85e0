"""The prediction core: the contract, the Predictor, maps, attributions, precision and the CLI.

It depends on the model package (model/) only: no HTTP, BentoML or accelerate here.
"""
