"""Destinations for an environment record: one small module each (json, env, github, mlflow, wandb)."""
