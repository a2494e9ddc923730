from vimtool.cli import main

main()
