"""Training: EG3D datasets, the synthetic ground-truth dataset, losses, augmentation and the loop.

    dataset.py      ImageFolderDataset (EG3D zip/folder + dataset.json), validation, x-flip
    dataset_tool.py writes datasets from images + cameras, prints summaries
    synthetic.py    procedural ground-truth dataset (portrait / 360 cameras)
    presets.py      --cfg presets: the official ffhq/afhq/shapenet configs and small CPU/synthetic ones
    config.py       TrainOptions (every option, default written once, help derived) and the typed TrainingConfig
    options.py      the train.py command line (official option names) and its resolution to a TrainingConfig
    run_dir.py      the run folder: which one, and RunDir (logs, TensorBoard, stats.jsonl, grids, snapshots)
    loss.py         the EG3D loss: non-saturating logistic, lazy R1 on the dual image, blur, GPC, density reg
    augment.py      ADA-style augmentation with adaptive p
    loop.py         the training loop: phases, EMA, snapshots, resume, stats, multi-process
    monitor.py      `train.py monitor`: DearPyGui window over run folders (reads files only)

Importing the package imports nothing heavy; import the submodules you need.
"""
