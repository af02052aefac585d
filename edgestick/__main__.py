from edgestick.cli import main

raise SystemExit(main())
