"""A dataset of your own on the shared base: ``<root>/classes.txt`` (one name per line) and ``train.txt`` /
``test.txt`` (``relative/path.jpg label`` per line, 0-based labels). Train on it:

    python -m glsim_pl.train -cd conf dataset=my_list dataset.root=/data/my_list
"""

from glsim_pl.data.base import FGVCDataModule, Splits
from glsim_pl.data.sources import ImageFileList, Sample
from glsim_pl.errors import UserError


class ListFileDataModule(FGVCDataModule):
    name = "my_list"
    source_url = "your own files"
    required_files = ("classes.txt", "train.txt", "test.txt")  # checked before parsing, one message if missing

    def read_splits(self) -> Splits:
        classes = (self.root / "classes.txt").read_text().split()
        return Splits(self._read("train.txt", len(classes)), self._read("test.txt", len(classes)), classes)

    def _read(self, name: str, num_classes: int) -> ImageFileList:
        samples = []
        for line_no, line in enumerate((self.root / name).read_text().splitlines(), 1):
            path, _, label = line.rpartition(" ")
            if not path or not label.isdigit() or int(label) >= num_classes:
                raise UserError(f"{self.root / name}:{line_no}: expected 'relative/path.jpg <0..{num_classes - 1}>'")
            samples.append(Sample(self.root / path, int(label)))
        return ImageFileList(samples, self.resize_size if self.fast_decode else None)
