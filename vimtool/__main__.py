from vimtool.commands import main

main()
