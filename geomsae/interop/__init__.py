"""Use a geomsae SAE in other tools, and theirs in geomsae.

>>> export_sae("runs/aen", "export/aen", ExportConfig(format="saelens"))   # SAE.load_from_disk("export/aen")
>>> import_sae("export/aen", "runs/aen-back")                              # geomsae eval / compare

SAELens (v6) takes every architecture: relu_l1, en, adaptive_lasso and aen as its 'standard'
(ReLU) SAE, topk as 'topk', jumprelu and batchtopk (its inference threshold) as 'jumprelu',
gated as 'gated'. sparsify takes TopK SAEs. Exports compute the same x̂ from the same raw
activations; codes are in raw units (z/s for an SAE trained on s·x, see
:mod:`geomsae.interop.folders`). An export also records the geomsae architecture, config,
input scale and the state SAELens has no place for, so importing it gives back the SAE that
was exported. A folder written by SAELens or sparsify imports as relu_l1 / topk / jumprelu /
gated; the l1 coefficient of a standard SAE is not in its cfg.json, so unless given
(``l1_coefficient``) the import records the penalty as unknown and ``geomsae compare``
calibrates λ1 to the encoder's L0, as it does for TopK.
"""

from geomsae.interop.convert import (
    FOREIGN_ARCH,
    ExportConfig,
    ImportConfig,
    export_sae,
    import_sae,
    read_foreign,
)

__all__ = ["FOREIGN_ARCH", "ExportConfig", "ImportConfig", "export_sae", "import_sae", "read_foreign"]
