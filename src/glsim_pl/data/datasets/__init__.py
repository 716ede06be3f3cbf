"""One module per dataset file format, each a :class:`~glsim_pl.data.base.FGVCDataModule`."""
