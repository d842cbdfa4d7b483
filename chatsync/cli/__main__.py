from chatsync.cli.main import main

raise SystemExit(main())
