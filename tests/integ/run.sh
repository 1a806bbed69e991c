#!/usr/bin/env bash
# make integ: deploy each integ app (tests/integ/integ_*.py) to the account of the current AWS credentials,
# let its assertion stack run the assertions (a failed assertion fails that deploy), then destroy
# everything, also after a failure. Usage: tests/integ/run.sh [integ_app.py ...] (default: all).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
CDK="npx --no-install cdk"
if ! "$PY" -c 'import boto3, sys; boto3.client("sts").get_caller_identity()' >/dev/null 2>&1; then
  echo "make integ: no AWS credentials (aws sts get-caller-identity fails); configure a sandbox account's credentials and a region, then run it again." >&2
  exit 2
fi
apps=("$@")
[ ${#apps[@]} -eq 0 ] && apps=(tests/integ/integ_*.py)
status=0
for app in "${apps[@]}"; do
  out="cdk.integ.out/$(basename "$app" .py)"
  started=$(date +%s)
  echo ">> $app: deploy the test stack and its assertion stack (assertions run during the deploy)"
  $CDK deploy --app "$PY $app" --output "$out" --all --require-approval never --progress events
  deployed=$?
  echo ">> $app: destroy (always)"
  $CDK destroy --app "$PY $app" --output "$out" --all --force
  destroyed=$?
  elapsed=$(( $(date +%s) - started ))
  if [ $deployed -eq 0 ] && [ $destroyed -eq 0 ]; then
    echo "PASS $app in ${elapsed}s (deploy, assertions and destroy)"
  else
    echo "FAIL $app in ${elapsed}s: deploy/assertions exit $deployed, destroy exit $destroyed" >&2
    [ $destroyed -ne 0 ] && echo "     check the account for leftover stacks of $app (cdk destroy --app \"$PY $app\" --all)" >&2
    status=1
  fi
done
exit $status
