from infra_apply.cli import main

main()
