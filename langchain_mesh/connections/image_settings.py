"""One image request translated for one model: what is sent, what is translated, what is refused.

Every image connection goes through :class:`ImageTranslation`, so every provider refuses the same way::

    t = ImageTranslation("openai", "dall-e-3", request)
    t.refuse_present(seed="DALL-E takes no seed")          # strict: SettingsError naming model and setting
    size = t.snap_size([(1024, 1024), (1792, 1024)])     # lenient: dropped, listed in ignored_settings
    ...
    return t.finish(response)

Strict is the default; ``lenient`` (the request's flag, or ``image_settings: lenient`` on the
connection) drops what the model does not take and lists it in ``response.ignored_settings``.
Shapes snap to the nearest shape the model accepts when its ratio is within
:data:`SNAP_TOLERANCE` of the one asked; farther than that is a refusal like any other setting.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional

from ..errors import CapabilityError, SettingsError
from ..imaging import check_mask_size
from ..schema import ImageGenerationRequest, ImageGenerationResponse, ratio_value

__all__ = ["ImageTranslation", "SNAP_TOLERANCE", "STYLE_PRESETS", "fidelity_to_scale", "weighted_prompt"]

log = logging.getLogger("langchain_mesh.images")

#: how far (relative) an asked width/height ratio may be from the one a model accepts and still snap to it
SNAP_TOLERANCE = 0.10


#: Stability's style presets (its REST API, and SDXL on Bedrock)
STYLE_PRESETS = ("3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance",
                 "fantasy-art", "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami",
                 "photographic", "pixel-art", "tile-texture")


def weighted_prompt(prompts: list[Any]) -> str:
    """Stability's prompt syntax weighs words as ``(text:weight)``: weighted prompts stay weighted in one text."""
    return ", ".join(p.text.strip() if p.weight is None or p.weight == 1 else f"({p.text.strip()}:{p.weight:g})"
                     for p in prompts)


def fidelity_to_scale(fidelity: float, low: float = 1.0, high: float = 10.0) -> float:
    """The seed's fidelity (0.1-1, how strongly to adhere to the prompt) as a guidance/CFG scale in [low, high]."""
    return round(max(low, min(high, fidelity * high)), 2)


class ImageTranslation:
    def __init__(self, provider: str, model: str, request: ImageGenerationRequest):
        self.provider, self.model, self.request = provider, model, request
        self.ignored: list[str] = []

    # ---- refusals -------------------------------------------------------------------------------------

    def refuse(self, setting: str, why: str) -> None:
        """A setting this model does not take: an error, or (lenient) dropped and reported."""
        if self.request.lenient:
            log.warning("%s on %s does not take %s (%s): not sent (lenient)", self.model, self.provider, setting, why)
            if setting not in self.ignored:
                self.ignored.append(setting)
            return
        raise SettingsError(f"{self.model} on {self.provider} does not take '{setting}': {why}. Remove it, or "
                            "set lenient (request.lenient=True, or image_settings: lenient on the connection) "
                            "to drop what a model does not take", setting.split("/"))

    def refuse_present(self, **why: str) -> None:
        """Refuse each named setting that the request sets (``quality="DALL-E 2 has one quality"``)."""
        for setting, reason in why.items():
            if self._value(setting) not in (None, [], False):
                self.refuse(setting, reason)

    def _value(self, setting: str) -> Any:
        if setting == "weight":
            return self.request.image_weight
        if setting == "negative_prompt":
            return self.request.negative_prompts
        return getattr(self.request, setting)

    def mode_not_offered(self, offered: Iterable[str], where: str = "") -> CapabilityError:
        """An image-to-image mode the model has no API for (never dropped: the output would be another thing)."""
        mode = self.request.mode or "text-to-image"
        listed = ", ".join(offered) or "none"
        return CapabilityError(f"{self.model} on {self.provider} does not offer image-to-image mode {mode} "
                               f"(its modes: {listed}){where}")

    def choice(self, setting: str, allowed: dict[str, str]) -> Optional[str]:
        """A setting with a closed set of values, translated through ``allowed`` (mesh value -> wire value)."""
        value = self._value(setting)
        if value is None:
            return None
        if value in allowed:
            return allowed[value]
        self.refuse(setting, f"{value!r} is not one of {', '.join(sorted(allowed))}")
        return None

    # ---- shapes ---------------------------------------------------------------------------------------

    def _asked(self) -> tuple[Optional[float], str]:
        r = self.request
        if r.aspect_ratio is not None and (r.width or r.height):
            if r.width and r.height and abs(r.width / r.height - ratio_value(r.aspect_ratio)) > \
                    SNAP_TOLERANCE * ratio_value(r.aspect_ratio):
                raise SettingsError(f"width/height {r.width}x{r.height} contradict aspect_ratio {r.aspect_ratio}; "
                                    "give one or the other", ["aspect_ratio", "width", "height"])
        if (r.width is None) != (r.height is None) and r.aspect_ratio is None:
            raise SettingsError(f"give both width and height (or an aspect_ratio) for {self.model}",
                                ["width", "height"])
        return r.ratio, "aspect_ratio" if r.aspect_ratio is not None else "width/height"

    def snap_ratio(self, allowed: Iterable[str]) -> Optional[str]:
        """For models that take an aspect ratio: the accepted ``W:H`` nearest to the asked shape."""
        asked, setting = self._asked()
        if asked is None:
            return None
        allowed = list(allowed)
        best = min(allowed, key=lambda a: abs(ratio_value(a) - asked) / asked)
        if abs(ratio_value(best) - asked) <= SNAP_TOLERANCE * asked:
            return best
        self.refuse(setting, f"{self._shape()} is no aspect ratio it takes ({', '.join(allowed)}; the nearest, "
                             f"{best}, is more than {SNAP_TOLERANCE:.0%} away)")
        return None

    def snap_size(self, allowed: Iterable[tuple[int, int]]) -> Optional[tuple[int, int]]:
        """For models that take a size: an exact size as is, else the accepted size of the nearest ratio
        (the largest of those, to keep detail)."""
        asked, setting = self._asked()
        if asked is None:
            return None
        allowed = list(allowed)
        r = self.request
        if (r.width, r.height) in allowed:
            return r.width, r.height  # type: ignore[return-value]
        best = min(allowed, key=lambda s: (round(abs(s[0] / s[1] - asked) / asked, 4), -s[0] * s[1]))
        if abs(best[0] / best[1] - asked) <= SNAP_TOLERANCE * asked:
            return best
        sizes = ", ".join(f"{w}x{h}" for w, h in allowed)
        self.refuse(setting, f"{self._shape()} matches none of its sizes ({sizes})")
        return None

    def _shape(self) -> str:
        r = self.request
        return f"aspect ratio {r.aspect_ratio}" if r.aspect_ratio is not None else f"{r.width}x{r.height}"

    # ---- image-to-image -------------------------------------------------------------------------------

    def strength(self, default: float) -> float:
        """How far from the original to go (0 keeps it, 1 ignores it): 1 - the original image's weight."""
        w = self.request.image_weight
        return default if w is None else round(1.0 - w, 4)

    def check_mask(self) -> None:
        r = self.request
        if r.mask is not None and r.images:
            check_mask_size(r.images[0].data, r.mask.data)

    # ---- the answer -----------------------------------------------------------------------------------

    def finish(self, response: ImageGenerationResponse) -> ImageGenerationResponse:
        if self.ignored:
            response.ignored_settings = list(self.ignored)
        if self.request.n and len(response.images) < self.request.n:
            log.warning("%s answered %d of %d images", self.model, len(response.images), self.request.n)
        return response
