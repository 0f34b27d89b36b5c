//! IceFormer k-NN attention (being written; see ../shared/ALGORITHMS.md section 1).
