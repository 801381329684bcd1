"""The JSON bodies of the image API (they also make its OpenAPI description)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from forcelink.api.repository import ImageRecord

_POINTS = {
    "rect": (2, 2),
    "ellipse": (2, 2),
    "line": (2, 2),
    "point": (1, 1),
    "polygon": (3, 200),
}


class Annotation(BaseModel):
    """A shape drawn on the image, in coordinates relative to its displayed size.

    ``points`` are ``[x, y]`` pairs from 0 (left/top) to 1 (right/bottom), so
    a shape stays in place whatever size the image is shown at. ``rect`` and
    ``ellipse`` take two opposite corners of their box, ``line`` its two
    ends, ``point`` one point, ``polygon`` 3 to 200 corners.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["rect", "ellipse", "line", "point", "polygon"]
    points: list[tuple[float, float]]
    label: str = Field(default="", max_length=200)
    color: str | None = Field(default=None, pattern=r"^#[0-9a-fA-F]{6}$")

    @model_validator(mode="after")
    def _check_points(self) -> Annotation:
        low, high = _POINTS[self.type]
        if not low <= len(self.points) <= high:
            raise ValueError(f"a {self.type} takes {low}-{high} points")
        for x, y in self.points:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError("coordinates run from 0 to 1")
        return self


class ImagePatch(BaseModel):
    """Fields to change; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    tags: list[str] | None = Field(default=None, max_length=50)
    description: str | None = Field(default=None, max_length=32000)
    annotations: list[Annotation] | None = Field(default=None, max_length=500)


class ImageOut(BaseModel):
    id: str
    record: str | None = Field(
        description="The WorkOrder the photo belongs to (its key in the mapping)"
    )
    tags: list[str]
    description: str
    annotations: list[Annotation]
    filename: str
    content_type: str
    size_bytes: int
    width: int = Field(description="As displayed, after the EXIF orientation")
    height: int
    sha256: str
    captured_at: datetime | None = Field(
        description="EXIF capture time, if the camera wrote one"
    )
    created_at: datetime
    updated_at: datetime
    uploaded_by: str
    url: str
    thumbnail_url: str
    salesforce_id: str | None = Field(description="Site_Photo__c id once synced")
    sync_state: str | None = Field(description="pending, synced, failed or conflict")

    @classmethod
    def of(cls, image: ImageRecord, base_url: str, thumb_size: int) -> ImageOut:
        return cls(
            id=image.id,
            record=image.record,
            tags=image.tags,
            description=image.description,
            annotations=[Annotation.model_validate(a) for a in image.annotations],
            filename=image.filename,
            content_type=image.content_type,
            size_bytes=image.size_bytes,
            width=image.width,
            height=image.height,
            sha256=image.sha256,
            captured_at=image.captured_at,
            created_at=image.created_at,
            updated_at=image.updated_at,
            uploaded_by=image.uploaded_by,
            url=f"{base_url}/v1/images/{image.id}",
            thumbnail_url=f"{base_url}/v1/images/{image.id}/thumbnail?w={thumb_size}",
            salesforce_id=image.sfid,
            sync_state=image.sync_state,
        )


class ImagePage(BaseModel):
    items: list[ImageOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page")


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    details: list[dict[str, str]] | None = None


class ErrorOut(BaseModel):
    error: ErrorBody
