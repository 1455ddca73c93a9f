from snapprof.cli import main

raise SystemExit(main())
