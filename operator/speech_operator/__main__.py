from speech_operator.cli import main

main()
