from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SubmitField, TextAreaField
from wtforms.validators import ValidationError

from app.auth.forms import username_field, username_taken
from app.validators import at_most, between, required

POST_MAX_LENGTH = 140


class EditProfileForm(FlaskForm):
    username = username_field()
    about_me = TextAreaField(_l('About me'), validators=[at_most(140)])
    submit = SubmitField(_l('Submit'))

    def __init__(self, original_username, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.original_username = original_username

    def validate_username(self, username):
        if username.data.lower() != self.original_username.lower() and username_taken(
            username.data
        ):
            raise ValidationError(_('Please use a different username.'))


class EmptyForm(FlaskForm):
    submit = SubmitField(_l('Submit'))


class PostForm(FlaskForm):
    post = TextAreaField(
        _l('Say something'),
        validators=[required(), between(1, POST_MAX_LENGTH)],
        # The browser stops at the limit, and app.js counts down to it.
        render_kw={'maxlength': POST_MAX_LENGTH},
    )
    submit = SubmitField(_l('Submit'))
