from scaler_jupyter.cli import main

main()
