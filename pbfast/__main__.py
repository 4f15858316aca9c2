from pbfast.cli import main

raise SystemExit(main())
