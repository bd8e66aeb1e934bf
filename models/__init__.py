"""Persona-selection models: shared maths plus thin NumPyro and Pyro backends."""
