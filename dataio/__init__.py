"""The data layer: demonstration datasets on disk and the windows training reads from them.

``dataset``  robomimic-layout HDF5 shards + manifest: writing (staging, merging), indexing, loading, verifying
``windows``  ``DemoWindows``: a torch ``Dataset`` of fixed-length windows over indexed demos
"""
