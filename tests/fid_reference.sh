#!/usr/bin/env bash
# Install the FID parity test's reference implementation into a separate folder (never the venv):
#   bash tests/fid_reference.sh TARGET_DIR        (CI: bash tests/fid_reference.sh .ci-ref)
# - pytorch-fid 0.3.0 + torchvision 0.28.0, --no-deps (torch, numpy, scipy, pillow come from the venv);
# - foolbox 3.3.4, --no-deps, only for the 20 real ImageNet photos its wheel ships in foolbox/data/
#   (read as files by the test, never imported).
# tests/test_fid_parity.py finds the folder at $VIMTOOL_FID_REF or <repo>/.ci-ref and puts it on sys.path
# inside the test only. Idempotent: does nothing when all four are already there.
set -euo pipefail
TARGET="${1:?usage: bash tests/fid_reference.sh TARGET_DIR}"
have() { compgen -G "$TARGET/$1" >/dev/null; }
if have "pytorch_fid-0.3.0.dist-info" && have "torchvision-0.28.0*.dist-info" && have "foolbox-3.3.4.dist-info" \
   && have "torch_fidelity-0.4.0.dist-info"; then
  echo "fid reference already in $TARGET" >&2
  exit 0
fi
mkdir -p "$TARGET"
python -m pip install -q --no-deps --upgrade --target "$TARGET" pytorch-fid==0.3.0 torchvision==0.28.0 foolbox==3.3.4 torch-fidelity==0.4.0
echo "fid reference installed in $TARGET" >&2
