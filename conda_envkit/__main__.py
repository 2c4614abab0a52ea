from conda_envkit.cli import run

run()
