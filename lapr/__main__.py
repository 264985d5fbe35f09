from lapr.cli import main

main()
