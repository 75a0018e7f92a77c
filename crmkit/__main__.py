from crmkit.cli import main

main()
