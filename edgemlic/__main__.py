from edgemlic.cli import main

main()
