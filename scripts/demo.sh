#!/usr/bin/env bash
# The main job on a demo scene the project makes itself: write the scene, detect anomalies
# through qgis_process, report the output and its AUC against the scene's ground truth.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py=.venv/bin/python
mkdir -p demo
$py -m fers_core demo-scene demo/demo_scene.tif demo/demo_truth.tif
scripts/qgis_process run fers:rx -- INPUT=demo/demo_scene.tif OUTPUT=demo/demo_rx.tif
echo
echo "Scores written to $root/demo/demo_rx.tif"
$py -m fers_core auc demo/demo_rx.tif demo/demo_truth.tif
