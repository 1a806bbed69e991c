from receipt_dynamo.cli import main

raise SystemExit(main())
