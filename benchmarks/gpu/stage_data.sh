#!/usr/bin/env bash
# Copies the offline CIFAR-10 copy the GPU run needs into a git-ignored folder
# of the repository, from which the device tool carries it along (about 56 MB):
#
#   bash benchmarks/gpu/stage_data.sh SOURCE [DEST]
#
# SOURCE must hold cifar10/cifar10_jpeg_pack.npz and
# cifar10/make_cifar10_batches.py (the offline data folder of this
# workplace). DEST defaults to .device/data (ignored by .gitignore); pass it
# as carry=[".device/data"].
set -euo pipefail
source_dir=${1:?usage: bash benchmarks/gpu/stage_data.sh SOURCE [DEST]}
dest=${2:-.device/data}
for file in cifar10/cifar10_jpeg_pack.npz cifar10/make_cifar10_batches.py; do
  if [[ ! -f "$source_dir/$file" ]]; then
    echo "error: $source_dir/$file is missing; pass the folder holding the" \
      "offline data as the first argument." >&2
    exit 1
  fi
done
mkdir -p "$dest"
cp "$source_dir/cifar10/cifar10_jpeg_pack.npz" \
  "$source_dir/cifar10/make_cifar10_batches.py" "$dest/"
du -sh "$dest"
