"""`edgemlic data ...`: generate the demo dataset, inspect a split's labels, check its files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgemlic.cli.app import app, console
from edgemlic.data.coco import load_coco_split, parse_categories
from edgemlic.data.stats import PROBLEMS, check_split, save_stats_chart, split_stats
from edgemlic.data.synth import generate_shapes_dataset
from edgemlic.io import write_json

data_app = typer.Typer(help="Datasets: generate the shapes demo set, inspect and check COCO-format splits.")
app.add_typer(data_app, name="data")

CocoRoot = Annotated[
    Path, typer.Option("--coco-root", help="Folder with annotations/ and one folder per split.")
]
Split = Annotated[str, typer.Option(help="Split name, e.g. train2017 or val2017.")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON here.")]


@data_app.command()
def synth(
    out: Annotated[
        Path, typer.Argument(help="Folder to write the dataset to (empty, new, or an earlier one).")
    ],
    train_images: Annotated[int, typer.Option(help="Images in train2017.")] = 600,
    val_images: Annotated[int, typer.Option(help="Images in val2017.")] = 200,
    image_size: Annotated[int, typer.Option(help="Side of the square images in pixels.")] = 128,
    seed: Annotated[int, typer.Option(help="Same seed, same files.")] = 0,
) -> None:
    """Generate the shapes dataset in COCO's layout."""
    root = generate_shapes_dataset(
        out, train_images=train_images, val_images=val_images, image_size=image_size, seed=seed
    )
    console.print(
        f"wrote {train_images} train and {val_images} val images ({image_size} px, seed {seed}) to {root}"
    )


@data_app.command()
def inspect(
    coco_root: CocoRoot,
    split: Split = "train2017",
    categories: Annotated[
        str | None, typer.Option(help='Comma-separated names, e.g. "dog,cat,potted plant".')
    ] = None,
    keep_negatives: Annotated[bool, typer.Option(help="Count images with none of the categories.")] = False,
    json_path: JsonOut = None,
    chart: Annotated[Path | None, typer.Option(help="Write a PNG bar chart of images per class.")] = None,
) -> None:
    """Show images per class and labels per image of a split, as its file lists them; problems that
    training and evaluation refuse are warnings here (`data check` lists them)."""
    coco = load_coco_split(
        coco_root, split, parse_categories(categories), keep_negatives=keep_negatives, strict=False
    )
    for problem in coco.problems:
        typer.echo(f"edgemlic: warning: {problem}", err=True)
    stats = split_stats(coco)
    table = Table(title=f"{split}: {stats['num_images']} images")
    table.add_column("class")
    table.add_column("images", justify="right")
    for name, count in stats["class_counts"].items():
        table.add_row(name, str(count))
    console.print(table)
    console.print(f"mean labels per image: {stats['mean_labels_per_image']:.4f}")
    histogram = ", ".join(f"{k}: {n}" for k, n in stats["labels_per_image_histogram"].items())
    console.print(f"labels per image: {histogram}")
    if json_path is not None:
        write_json(json_path, stats)
        console.print(f"wrote {json_path}")
    if chart is not None:
        save_stats_chart(stats, chart)
        console.print(f"wrote {chart}")


@data_app.command()
def check(coco_root: CocoRoot, split: Split = "train2017", json_path: JsonOut = None) -> None:
    """Read every image and record of a split and report problems; exit 1 when there are any."""
    report = check_split(coco_root, split)
    table = Table(title=f"{split}: {report.images_listed} images, {report.annotations_listed} annotations")
    table.add_column("problem")
    table.add_column("count", justify="right")
    table.add_column("examples")
    for key, description in PROBLEMS.items():
        table.add_row(description, str(report.problems[key]), ", ".join(report.examples[key]))
    console.print(table)
    if json_path is not None:
        write_json(json_path, report.to_dict())
        console.print(f"wrote {json_path}")
    if not report.ok:
        console.print(f"{sum(report.problems.values())} problem(s) found")
        raise typer.Exit(1)
    console.print("ok: no problems found")
