"""Where the plugin meets torchreid: the fixes to torchreid-pip (`compat`, applied and reverted in one place)
and torchreid's tables the plugin's datasets, models, samplers and transforms are registered in (`registry`)."""
