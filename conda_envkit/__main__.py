from conda_envkit.entry import run

run()
