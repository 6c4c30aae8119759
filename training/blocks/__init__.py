"""Building blocks shared by the recommenders in ``training.models``: losses, the fusion of
modalities, the DCT, item-item and user-item graphs, channel propagation, dilated
attention, and the id-embedding / feature-table set-up every model repeats. No model is
registered here; ``training.models`` holds one module per model."""
