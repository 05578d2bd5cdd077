from posthorn.cli import main

main()
