from conda_envkit.cli import main

main()
